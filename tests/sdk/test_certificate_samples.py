"""The official azure-keyvault-certificates samples (from the pinned package's source
distribution, which scripts/setup unpacks into tests/.samples), run unmodified against
atrest: only VAULT_URL says where the vault is."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).parents[1] / "requirements.txt"
VERSION = re.search(r"^azure-keyvault-certificates==(\S+)$", REQUIREMENTS.read_text(), re.M).group(1)
SAMPLES = Path(__file__).parents[1] / ".samples" / f"azure_keyvault_certificates-{VERSION}" / "samples"
# Every sample, synchronous and asynchronous (the latter on aiohttp, pinned).
RUN = sorted(p.name for p in SAMPLES.glob("*.py")) if SAMPLES.is_dir() else ["hello_world.py"]


@pytest.fixture(scope="module")
def import_files(tmp_path_factory):
    """What the import sample reads: a PFX without a password and a PEM with a PKCS#8 key,
    of a self-signed certificate made by openssl."""
    d = tmp_path_factory.mktemp("sample-import")
    run = lambda *args: subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "30",
        "-subj", "/CN=sample.contoso.test")
    run("pkcs12", "-export", "-in", "cert.pem", "-inkey", "key.pem", "-passout", "pass:", "-out", "cert.pfx")
    (d / "both.pem").write_bytes((d / "key.pem").read_bytes() + (d / "cert.pem").read_bytes())
    return {"PFX_CERT_PATH": str(d / "cert.pfx"), "PEM_CERT_PATH": str(d / "both.pem")}


@pytest.mark.parametrize("sample", RUN)
def test_an_official_sample_runs_unmodified(server, import_files, sample):
    path = SAMPLES / sample
    assert path.is_file(), f"{path} is missing: run scripts/setup"
    env = {**os.environ, "VAULT_URL": server.vault_url("sdk-main"), **import_files}
    done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
