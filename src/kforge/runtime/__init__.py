"""The evaluation runtime: what runs next to a GPU (locally or in a Modal container).

It depends on nothing beyond the standard library, torch and the backends' own toolchains, and
never imports the rest of kforge. ``judge`` is the trusted parent: it draws seeds, runs the
reference, checks outputs and computes statistics. ``sandbox`` is the child process that imports
the untrusted candidate; it holds no expected outputs and no statistics, and only returns raw data
(outputs and timing samples) that the judge validates.
"""
