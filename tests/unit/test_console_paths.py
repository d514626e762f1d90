"""Which console paths an auth layer lets through without the token."""

from core.api.console import is_public_page


def test_only_the_consoles_shells_and_static_files_are_public():
    for path in ("/console", "/console/", "/console/positions/7", "/console/static/console.js"):
        assert is_public_page(path), path
    for path in (
        "/console/fragments/book",
        "/console/fragments/positions/7",
        "/positions",
        "/consolex",
        "/console/positions/7/close",
    ):
        assert not is_public_page(path), path
