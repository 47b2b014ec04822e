"""The one build step pyproject.toml cannot express: compiling the message catalogs.

The .mo files are build outputs (not in git). `build_py` copies the packages, .po files
included (package-data), into the build directory; this subclass then compiles every .po there
into its .mo, so a wheel, `pip install .` and the Docker image carry compiled catalogs. Babel
does the compiling, hence it is in [build-system].requires. An editable install serves the
source tree instead: there `python -m bot.i18n` compiles them (scripts/test.sh, scripts/run.sh).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _catalogs() -> ModuleType:
    # bot/catalogs.py needs only Babel; loaded by path, so the build never imports the app
    # (and its runtime dependencies, which the isolated build environment does not have).
    spec = importlib.util.spec_from_file_location("_relaygram_catalogs", ROOT / "bot/catalogs.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load bot/catalogs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithCatalogs(build_py):
    compiled: list[str]

    def run(self) -> None:
        super().run()
        locales = Path(self.build_lib) / "bot" / "locales"
        self.compiled = [str(mo) for mo in _catalogs().compile_catalogs(locales)]
        for mo in self.compiled:
            self.announce(f"compiled {mo}", level=2)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        return outputs + [mo for mo in getattr(self, "compiled", []) if mo not in outputs]


setup(cmdclass={"build_py": BuildPyWithCatalogs})
