"""Built-in candidate generators."""
