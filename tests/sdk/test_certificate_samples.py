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
# The import sample waits for certificate import.
RUN = ["hello_world.py", "list_operations.py", "recover_purge_operations.py", "backup_restore_operations.py",
       "contacts.py", "issuers.py", "parse_certificate.py"]


@pytest.mark.parametrize("sample", RUN)
def test_an_official_sample_runs_unmodified(server, sample):
    path = SAMPLES / sample
    assert path.is_file(), f"{path} is missing: run scripts/setup"
    env = {**os.environ, "VAULT_URL": server.vault_url("sdk-main")}
    done = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
