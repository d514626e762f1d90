"""``in_constants``: the engine's constants written into the SQL, and nothing else."""

import pytest
from sqlalchemy import column, select
from sqlalchemy.dialects import postgresql

from core.db.constants_sql import in_constants


def test_constants_are_written_into_the_statement_not_bound():
    query = select(column("id")).where(in_constants(column("status"), ["active", "closing"]))
    compiled = query.compile(dialect=postgresql.dialect())
    assert "status IN ('active', 'closing')" in str(compiled)
    assert compiled.params == {}  # nothing left to render at execution


@pytest.mark.parametrize("value", ["it's", "a b", "", "Active", "1x", "x;--"])
def test_anything_but_an_identifier_is_refused(value):
    with pytest.raises(ValueError):
        in_constants(column("status"), [value])


def test_an_empty_list_is_refused():
    with pytest.raises(ValueError):
        in_constants(column("status"), [])
