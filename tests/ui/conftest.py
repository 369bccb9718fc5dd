"""The S3 transfer tests' fixtures (moto S3 server, emulator), for the Segmind page's tests."""

from tests.transfers.conftest import emu as emu
from tests.transfers.conftest import moto_endpoint as moto_endpoint
from tests.transfers.conftest import s3 as s3
