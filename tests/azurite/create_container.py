"""Creates a container in the Azurite at $AZURITE_BLOB_STORAGE_URL, waiting for it to
answer: `python tests/azurite/create_container.py NAME` (scripts/test and bench/disk)."""
import os
import sys
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
from conftest import AZURITE_ACCOUNT_KEY  # noqa: E402

service = BlobServiceClient(os.environ["AZURITE_BLOB_STORAGE_URL"] + "/devstoreaccount1",
                            credential={"account_name": "devstoreaccount1", "account_key": AZURITE_ACCOUNT_KEY})
for attempt in range(100):
    try:
        service.create_container(sys.argv[1])
        break
    except Exception:
        if attempt == 99:
            raise
        time.sleep(0.1)
