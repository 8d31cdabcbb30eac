"""Shared test data for the registry tests (fixtures live in conftest.py)."""

from __future__ import annotations

from registry.idnumber import check_char

SECRET = b"test-secret-0123456789"

HEADER = "姓名,证件号码,手机,地址或房号,身份,入住日期,照片,外部编号\n"


def make_id(n: int) -> str:
    first17 = f"3301061985{(n % 12) + 1:02d}{(n % 28) + 1:02d}{n % 1000:03d}"
    return first17 + check_char(first17)


ROWS = [
    f"张三,{make_id(1)},13800000001,3幢2单元1203室,业主,2024-03-01,p0.jpg,E1\n",
    f"李四,{make_id(2)},13800000002,三幢二单元1203,家属,2024-03-01,p1.jpg,E2\n",
    f"王五,{make_id(3)},13800000003,3号楼2单元1204,租户,2024-05-01,p2.jpg,\n",
    f"赵六,{make_id(4)},,3-2-1205,tenant,,hanks.jpg,E4\n",
]


def empty_tables(url: str) -> None:
    """Delete every row (children first), keeping the migrated schema."""
    from sqlalchemy import MetaData

    from server.db import make_engine

    engine = make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        for table in reversed(meta.sorted_tables):
            if table.name != "alembic_version":
                conn.execute(table.delete())
    engine.dispose()
