"""Import the CEL package without its command-line module.

`cel/__init__.py` imports `cel.cli`, the package's interactive shell, which loads typer, rich,
prompt_toolkit and pygments. That took about 0.1 s of every ecoc command that loads rules,
for code ecoc never runs, so an empty module replaces `cel.cli` before the first import.
"""

from __future__ import annotations

import sys
import types

if "cel" not in sys.modules:
    sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

import cel
from cel.stdlib import add_stdlib_to_context

__all__ = ["add_stdlib_to_context", "cel"]
