"""Built-in kernel backends."""
