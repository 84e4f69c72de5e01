"""Writes src/courier/aio.py from src/courier/_api.py: the same functions, awaitable.

python tools/gen_aio.py      (then ruff format; tests/test_api.py checks the two agree)
"""

import re
from pathlib import Path

src = Path(__file__).resolve().parent.parent / "src" / "courier"
s = (src / "_api.py").read_text()
s = s.replace(
    '"""courier\'s SQL API as typed functions (sync flavour; courier.aio has the same for asyncio).',
    '"""courier\'s SQL API for asyncio: the functions of the top-level module, awaitable.\n\n'
    "Generated from _api.py by tools/gen_aio.py: edit that file and regenerate.",
)
s = s.replace(
    "Each function takes what it runs on first: a psycopg Connection, a SQLAlchemy Session or\n"
    "Connection, or Django's connection.",
    "Each function takes what it runs on first: a psycopg AsyncConnection, or a SQLAlchemy\n"
    "AsyncSession or AsyncConnection.",
)
s = s.replace("from ._conn import Executor, execute", "from ._conn import AsyncExecutor, execute_async")
s = s.replace("conn: Executor", "conn: AsyncExecutor")
s = s.replace("\ndef ", "\nasync def ")
s = re.sub(r"return execute\(", "return await execute_async(", s)
s = re.sub(r"\n    execute\(", "\n    await execute_async(", s)
(src / "aio.py").write_text(s)
