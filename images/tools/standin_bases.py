"""Stand-in base images for `make image-test`: when a Dockerfile's base image cannot be pulled (no registry
reachable), a minimal root filesystem is made from the distribution's package mirror with debootstrap (root only),
imported into the engine, and passed through the Dockerfile's base-image build argument instead.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagebuild import REPO, Engine, run_command
from sqltune.artifacts import sha256_file
from sqltune.errors import SqltuneError
from sqltune.images import RECIPES


@dataclass(frozen=True)
class StandIn:
    """A base image built from a distribution's package mirror, standing in for one that cannot be pulled."""

    image: str
    suite: str
    mirror: str
    sources: str  # the sources.list an image of that distribution ships
    include: tuple[str, ...] = ()
    script: str | None = None  # debootstrap script, for releases newer than the host's debootstrap knows
    keyring_deb: tuple[str, str] | None = None  # (url, sha256) of the distribution's keyring package


STAND_INS: dict[str, StandIn] = {
    # python:3.11-slim-bookworm: Debian bookworm's python3 is 3.11; venv needs python3-venv there.
    "PYTHON_IMAGE": StandIn(
        image="localhost/sqltune-standin-python:3.11-bookworm",
        suite="bookworm",
        mirror="http://deb.debian.org/debian",
        sources="deb http://deb.debian.org/debian bookworm bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n",
        include=("python3", "python3-venv"),
    ),
    # nvidia/cuda:*-base-ubuntu24.04 without the CUDA hooks (a CPU machine cannot use them anyway).
    "CUDA_IMAGE": StandIn(
        image="localhost/sqltune-standin-ubuntu:24.04",
        suite="noble",
        mirror="http://archive.ubuntu.com/ubuntu",
        sources="deb http://archive.ubuntu.com/ubuntu noble noble-updates main universe\n"
        "deb http://security.ubuntu.com/ubuntu noble-security main universe\n",
        script="/usr/share/debootstrap/scripts/gutsy",
        keyring_deb=(
            "http://archive.ubuntu.com/ubuntu/pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb",
            "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8",
        ),
    ),
}


def dockerfile_base(dockerfile: str, arg: str) -> str:
    """The default of a Dockerfile's base-image build argument: the real, pinned base."""
    match = re.search(rf"^ARG {arg}=(\S+)$", (REPO / dockerfile).read_text(), flags=re.M)
    if not match:
        raise SqltuneError(f"{dockerfile} has no `ARG {arg}=<image>` line")
    return match.group(1)


def make_stand_in(engine: Engine, stand_in: StandIn, work: Path) -> None:
    """debootstrap a minimal root filesystem and import it as `stand_in.image` (about a minute)."""
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        raise SqltuneError(
            f"cannot make the stand-in base {stand_in.image}: debootstrap needs root and the debootstrap package"
        )
    rootfs = work / stand_in.suite
    command = ["debootstrap", "--variant=minbase"]
    if stand_in.include:
        command.append(f"--include={','.join(stand_in.include)}")
    if stand_in.keyring_deb:
        command.append(f"--keyring={_keyring(stand_in.keyring_deb, work)}")
    command += [stand_in.suite, str(rootfs), stand_in.mirror]
    if stand_in.script:
        command.append(stand_in.script)
    print(f"making the stand-in base {stand_in.image} with debootstrap from {stand_in.mirror}", flush=True)
    run_command(command, f"debootstrap {stand_in.suite}")
    (rootfs / "etc" / "apt" / "sources.list").write_text(stand_in.sources, encoding="utf-8")
    for cache in (rootfs / "var" / "cache" / "apt" / "archives", rootfs / "var" / "lib" / "apt" / "lists"):
        for item in cache.glob("*"):
            if item.is_file():
                item.unlink()
    tarball = work / f"{stand_in.suite}.tar"
    run_command(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], f"packing {rootfs}")
    engine.command("import", str(tarball), stand_in.image, capture=True)
    shutil.rmtree(rootfs)
    tarball.unlink()


def _keyring(deb: tuple[str, str], work: Path) -> Path:
    """The archive keyring from the distribution's keyring package, checked against its pinned sha256."""
    import urllib.request

    url, sha256 = deb
    package = work / Path(url).name
    with urllib.request.urlopen(url, timeout=60) as response:
        package.write_bytes(response.read())
    if sha256_file(package) != sha256:
        raise SqltuneError(f"{url}: sha256 {sha256_file(package)} is not the pinned {sha256}")
    run_command(["dpkg-deb", "-x", str(package), str(work / "keyring")], f"unpacking {package}")
    found = sorted((work / "keyring").rglob("*-archive-keyring.gpg"))
    if not found:
        raise SqltuneError(f"{url} holds no *-archive-keyring.gpg")
    return found[0]


def prepare_bases(engine: Engine, steps: Sequence[str], overrides: dict[str, str], work: Path) -> dict[str, str]:
    """Base-image build arguments: the caller's overrides; else the real base if it is here or can be pulled;
    else a stand-in (made once, reused by later runs)."""
    bases = dict(overrides)
    for arg in sorted({RECIPES[step].base_arg for step in steps} - set(overrides)):
        real = dockerfile_base(next(r.dockerfile for r in RECIPES.values() if r.base_arg == arg), arg)
        if engine.has_image(real) or engine.pull(real):
            continue
        stand_in = STAND_INS[arg]
        print(f"{real} cannot be pulled here; using the stand-in {stand_in.image}", flush=True)
        if not engine.has_image(stand_in.image):
            make_stand_in(engine, stand_in, work)
        bases[arg] = stand_in.image
    return bases
