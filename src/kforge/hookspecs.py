"""The whole public plugin contract of kforge.

Each hook hands the plugin a ``register`` callback; call it once per implementation. Every
implementation is a class with a unique ``name`` (per kind), a ``description`` and an ``options``
tuple of :class:`kforge.options.Option` describing its recipe keys; kforge instantiates it with the
resolved options as keyword arguments.
"""

import pluggy

hookspec = pluggy.HookspecMarker("kforge")
hookimpl = pluggy.HookimplMarker("kforge")


@hookspec
def register_backends(register):
    """Register kernel languages: ``register(BackendClass)``."""


@hookspec
def register_generators(register):
    """Register candidate generators (LLMs, replay, tuners): ``register(GeneratorClass)``."""


@hookspec
def register_searches(register):
    """Register search strategies: ``register(SearchClass)``."""


@hookspec
def register_executors(register):
    """Register places candidates are judged (local GPUs, Modal): ``register(ExecutorClass)``."""


@hookspec
def register_problem_sources(register):
    """Register problem sources (a recipe's ``[problems] source``): ``register(SourceClass)``."""


@hookspec
def register_loggers(register):
    """Register run loggers that receive every event: ``register(LoggerClass)``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``kforge`` command group."""
