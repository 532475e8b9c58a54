"""Jinja2 templates for the human-readable pages: the repository's templates/ first, then ecoc's own.

A compliance repository can change a page by putting a template of the same name into its
templates/ folder. Templates run in Jinja2's sandbox, values are HTML-escaped, and a name the
template uses but the page does not provide is an error instead of an empty text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from ecoc.errors import ConfigError


def environment(root: Path) -> jinja2.Environment:
    loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(root / "templates"), jinja2.PackageLoader("ecoc", "templates")]
    )
    return jinja2.sandbox.SandboxedEnvironment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


def render_page(root: Path, name: str, **values: Any) -> str:
    """Render the template `name` with `values`; a broken template is a configuration error."""
    try:
        return environment(root).get_template(name).render(**values)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or exc.name or name}:{exc.lineno}"
        raise ConfigError(f"{where}: the template is not valid Jinja2: {exc.message}", "fix the template") from None
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(
            f"template {exc.name} is missing from templates/ and from ecoc"
            + (f" (used by {name})" if exc.name != name else ""),
            "reinstall ecoc, or copy the template into templates/",
        ) from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"template {name} uses a value the page does not provide: {exc.message}",
            "use only the values its comment at the top lists",
        ) from None
    except Exception as exc:  # whatever an expression of the template raises while it renders
        raise ConfigError(
            f"template {name} failed while rendering: {type(exc).__name__}: {exc}", "fix the template"
        ) from None
