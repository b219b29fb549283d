"""`make images`: build the component images with docker or podman, whichever runs here, and print their sizes.

Each image is built from its recipe in `sqltune.images.RECIPES` (build context: the repo root) and tagged
with the name `image_for` gives it. Base images can be overridden (`--base PYTHON_IMAGE=...`), and an extra
CA bundle for a TLS-intercepting proxy is handed to the build as the secret `ca`, so it never lands in a layer.

Podman here needs two engine settings this kernel imposes: runc (crun refuses a hybrid cgroup layout) and
default ulimits within the process's hard limits (podman's defaults exceed them). They go into a private
containers.conf that only our podman calls read (CONTAINERS_CONF); /etc is left alone, and a CONTAINERS_CONF
the caller set wins.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqltune.errors import SqltuneError
from sqltune.images import RECIPES, STEPS, image_for

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("docker", "podman")
# The most podman asks for by default; the process's hard limit caps it.
_ULIMITS = {"nofile": (resource.RLIMIT_NOFILE, 1048576), "nproc": (resource.RLIMIT_NPROC, 32768)}


@dataclass(frozen=True)
class Engine:
    """A container engine CLI that answers `info`, and the environment its commands run with."""

    binary: str
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ), repr=False)

    @property
    def name(self) -> str:
        return Path(self.binary).name

    def command(self, *args: str, check: bool = True, capture: bool = False, timeout: float | None = None) -> str:
        """Run `<engine> args...` (output streamed unless captured); a failure is a SqltuneError naming it."""
        try:
            done = subprocess.run(
                [self.binary, *args],
                env=self.env,
                stdout=subprocess.PIPE if capture else None,
                stderr=subprocess.STDOUT if capture else None,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SqltuneError(f"`{self.name} {' '.join(args[:2])}` did not finish within {timeout:.0f} s") from None
        if check and done.returncode != 0:
            tail = f":\n{done.stdout[-3000:]}" if capture else ""
            raise SqltuneError(f"`{self.name} {' '.join(args[:2])} ...` failed with exit code {done.returncode}{tail}")
        return done.stdout or ""

    def has_image(self, image: str) -> bool:
        return (
            subprocess.run([self.binary, "image", "inspect", image], env=self.env, capture_output=True).returncode == 0
        )

    def pull(self, image: str, timeout: float = 300) -> bool:
        """Whether `image` could be pulled (a registry that cannot be reached fails within seconds)."""
        try:
            done = subprocess.run([self.binary, "pull", image], env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def image_size(self, image: str) -> int:
        """The image's size in bytes, as the engine reports it."""
        return int(self.command("image", "inspect", "--format", "{{.Size}}", image, capture=True).strip())


def run_command(args: Sequence[str], what: str, **kwargs: Any) -> None:
    """Run a command other than the engine's (debootstrap, tar, chmod, ...); a failure is a SqltuneError naming
    `what` with the command's output."""
    done = subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise SqltuneError(f"{what} failed (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}")


def podman_conf(state_dir: Path) -> Path:
    """A containers.conf with the runtime and ulimits this machine needs (see the module docstring)."""
    limits = []
    for name, (rlimit, wanted) in _ULIMITS.items():
        hard = resource.getrlimit(rlimit)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        limits.append(f'"{name}={value}:{value}"')
    lines = ["[containers]", f"default_ulimits = [{', '.join(limits)}]"]
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    path = state_dir / "containers.conf"
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def find_engine(state_dir: Path) -> Engine:
    """The first of docker and podman that is installed and whose `info` answers (a docker CLI without a
    daemon does not count); a clear error when neither does."""
    tried = []
    for name in ENGINES:
        binary = shutil.which(name)
        if not binary:
            continue
        env = dict(os.environ)
        if name == "podman" and "CONTAINERS_CONF" not in env:
            env["CONTAINERS_CONF"] = str(podman_conf(state_dir))
        try:
            probe = subprocess.run([binary, "info"], env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            tried.append(f"{name}: `{name} info` did not answer within 120 s")
            continue
        if probe.returncode == 0:
            return Engine(binary, env)
        tried.append(f"{name}: `{name} info` failed ({(probe.stderr.strip().splitlines() or ['?'])[-1]})")
    detail = "; ".join(tried) or "neither is installed"
    raise SqltuneError(f"no running container engine (docker or podman): {detail}")


def build(
    engine: Engine, step: str, bases: dict[str, str] | None = None, ca_bundle: Path | None = None
) -> tuple[str, float]:
    """Build one step's image; returns its reference and the build time in seconds."""
    recipe = RECIPES[step]
    image = image_for(step)
    args = ["build", "-f", str(REPO / recipe.dockerfile), "-t", image]
    build_args = dict(recipe.build_args)
    if bases and recipe.base_arg in bases:
        build_args[recipe.base_arg] = bases[recipe.base_arg]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    if ca_bundle is not None:
        if not ca_bundle.is_file():
            raise SqltuneError(f"CA bundle not found: {ca_bundle}")
        args += ["--secret", f"id=ca,src={ca_bundle}"]
    print(f"building {image} ({recipe.dockerfile}, {' '.join(f'{k}={v}' for k, v in build_args.items())})", flush=True)
    started = time.perf_counter()
    engine.command(*args, str(REPO))
    return image, time.perf_counter() - started


def build_all(
    engine: Engine, steps: Iterable[str], bases: dict[str, str] | None = None, ca_bundle: Path | None = None
) -> dict[str, tuple[str, float]]:
    """Build the steps' images in pipeline order; returns step -> (image, seconds)."""
    return {step: build(engine, step, bases, ca_bundle) for step in STEPS if step in set(steps)}


def size_table(engine: Engine, built: dict[str, tuple[str, float]]) -> str:
    """One line per image: reference, size, build time."""
    return "\n".join(
        f"{image:<48} {engine.image_size(image) / 1e6:>9.0f} MB   built in {seconds:.0f} s"
        for image, seconds in built.values()
    )


def parse_steps(text: str | None) -> list[str]:
    """`"evaluate publish"` (spaces or commas) -> steps in pipeline order; empty means all; unknown is an error."""
    wanted = [s for s in (text or "").replace(",", " ").split() if s]
    unknown = sorted(set(wanted) - set(STEPS))
    if unknown:
        raise SqltuneError(f"unknown step(s) {', '.join(unknown)} in STEPS; valid steps: {', '.join(STEPS)}")
    return [step for step in STEPS if not wanted or step in wanted]


def parse_bases(pairs: Sequence[str]) -> dict[str, str]:
    """`["PYTHON_IMAGE=ref", ...]` -> dict; names other than the recipes' base arguments are an error."""
    known = {recipe.base_arg for recipe in RECIPES.values()}
    bases = {}
    for pair in pairs:
        name, _, ref = pair.partition("=")
        if name not in known or not ref:
            raise SqltuneError(f"--base {pair!r}: expected NAME=IMAGE with NAME one of {', '.join(sorted(known))}")
        bases[name] = ref
    return bases


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """The options `make images` and `make image-test` share."""
    parser.add_argument(
        "--steps", default="", help='steps whose images to build, e.g. "evaluate publish" (default: all)'
    )
    parser.add_argument("--base", action="append", default=[], metavar="NAME=IMAGE", help="override a base image")
    parser.add_argument("--ca-bundle", type=Path, help="extra CA bundle (PEM) for pip/apt inside the build")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="images/tools/imagebuild.py", description=__doc__.split("\n")[0])
    add_build_options(parser)
    args = parser.parse_args(argv)
    try:
        steps = parse_steps(args.steps)
        bases = parse_bases(args.base)
        with tempfile.TemporaryDirectory(prefix="sqltune-images-") as state:
            engine = find_engine(Path(state))
            built = build_all(engine, steps, bases, args.ca_bundle)
            print(size_table(engine, built))
    except SqltuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
