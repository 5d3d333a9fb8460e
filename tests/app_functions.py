"""function_app.py's functions, built once per test process.

``FunctionApp.get_functions()`` builds and validates every function each time it is called,
and a second call fails ("does not have a unique function name"): tests share this one list.
"""

from __future__ import annotations

import functools
from typing import Any

import function_app


@functools.cache
def app_functions() -> tuple[Any, ...]:
    return tuple(function_app.app.get_functions())
