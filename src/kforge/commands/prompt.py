"""``kforge prompt RECIPE --problem ID``: print the exact prompt the recipe's generator would send.

Nothing is sent and no key is needed. With ``--parent FILE`` (and ``--feedback FILE``, a JSON object)
it prints a refinement prompt instead of a first-attempt one. ``--json`` prints the request as the
cache keys it (model, messages, sampling parameters, seed) with its cache key, which names the file
under a run's ``generations/`` that holds the answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


@click.command("prompt")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--problem", "problem_id", default=None, metavar="ID",
              help="The problem to prompt for (default: the recipe's first problem).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value, e.g. --set generator.edit_format=diff (repeatable).")
@click.option("--sample", default=0, show_default=True, help="Which sample's seed to show.")
@click.option("--parent", "parent_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A candidate file to improve: prints the refinement prompt.")
@click.option("--feedback", "feedback_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A JSON object of feedback on the parent (status, compile_error, speedup, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print the request (model, messages, sampling, seed) and its cache key as JSON.")
def prompt_cmd(recipe: Path, problem_id: str | None, overrides: tuple[str, ...], sample: int,
               parent_file: Path | None, feedback_file: Path | None, as_json: bool) -> None:
    """Print the exact prompt (system and user messages) RECIPE's generator would send."""
    from kforge.options import RecipeError
    from kforge.plugins import PluginError

    try:
        request = build_request(recipe, problem_id, list(overrides), sample, parent_file, feedback_file)
    except (RecipeError, PluginError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(request, indent=2))
        return
    for message in request["messages"]:
        click.echo(f"===== {message['role']} =====")
        click.echo(message["content"].rstrip("\n"))
        click.echo()


def build_request(recipe_path: Path, problem_id: str | None, overrides: list[str], sample: int = 0,
                  parent_file: Path | None = None, feedback_file: Path | None = None) -> dict[str, Any]:
    from kforge.api import Proposal, RunContext, derive_seed
    from kforge.engine import load_problems
    from kforge.options import RecipeError
    from kforge.plugins import get_registry
    from kforge.recipe import load_recipe

    registry = get_registry()
    rec = load_recipe(recipe_path, overrides, registry=registry)
    gname, gopts = rec.plugin("generator")
    generator = registry.get("generators", gname)(**gopts)
    if not hasattr(generator, "build_prompt") or not hasattr(generator, "request"):
        raise RecipeError(f"the {gname!r} generator sends no prompt (it is not a model); nothing to print")
    problems = load_problems(rec, registry)
    by_id = {p.id: p for p in problems}
    if problem_id is None:
        problem_id = problems[0].id
    if problem_id not in by_id:
        from kforge.options import close_match

        raise RecipeError(f"problem {problem_id!r} is not in the recipe's selection.{close_match(problem_id, by_id)} "
                          f"Selected: {', '.join(sorted(by_id))}.")
    bname, bopts = rec.plugin("backend")
    backend = registry.get("backends", bname)(**bopts)
    ctx = RunContext(seed=rec.tables["run"]["seed"], problems=problems, backend=backend, recipe=rec.to_dict())
    params: dict[str, Any] = {"sample": sample}
    search = rec.tables["search"]
    if search.get("temperature") is not None:
        params["temperature"] = search["temperature"]
    if parent_file is not None:
        params["parent_code"] = parent_file.read_text()
    if feedback_file is not None:
        try:
            params["feedback"] = json.loads(feedback_file.read_text())
        except ValueError as exc:
            raise RecipeError(f"--feedback {feedback_file} is not valid JSON: {exc}") from exc
    # The seed best-of-n gives this sample; other searches derive theirs the same way.
    seed = derive_seed(ctx.seed, search["name"], problem_id, sample)
    proposal = Proposal(id=f"{problem_id}:s{sample}", problem_id=problem_id, step=sample, seed=seed, params=params)
    prompt = generator.build_prompt(proposal, ctx)
    request: dict[str, Any] = generator.request(proposal, prompt)
    from kforge.generators.cache import cache_key

    return {"cache_key": cache_key(request), **request}
