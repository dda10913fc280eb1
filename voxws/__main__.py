"""`python -m voxws serve` = `voxws serve`."""

from voxws.cli import app

app()
