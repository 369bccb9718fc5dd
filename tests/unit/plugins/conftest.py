"""The S3 transfer tests' fixtures (moto S3 server, emulator), for the Segmind page's tests."""

from tests.support.s3_servers import moto_endpoint as moto_endpoint
from tests.support.s3_servers import s3 as s3
from tests.support.s3_servers import s3_emu as s3_emu  # the fixture "emu"
