"""Built-in ``kforge`` subcommands that live outside cli.py."""

from kforge.commands.prompt import prompt_cmd

__all__ = ["prompt_cmd"]
