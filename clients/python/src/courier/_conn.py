"""What a courier function runs on: a psycopg connection, or the caller's transaction as an
ORM or framework holds it (SQLAlchemy Session/Connection, Django's connection).

Every form is reduced to the psycopg (3) connection underneath, and the statement runs there,
inside whatever transaction that connection is in. courier's own cursor decodes jsonb, json and
uuid itself, whatever loaders the framework registered on the connection (Django's return jsonb
as text).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import JsonbLoader, JsonLoader
from psycopg.types.uuid import UUIDLoader

from ._errors import translate
from ._sql import Row, Stmt

T = TypeVar("T")


@runtime_checkable
class _DjangoConnection(Protocol):
    vendor: str

    def ensure_connection(self) -> None: ...


# What the sync functions accept: psycopg.Connection, sqlalchemy.orm.Session,
# sqlalchemy.orm.scoped_session, sqlalchemy.engine.Connection or django.db.connection.
Executor = Any
# What the asyncio functions accept: psycopg.AsyncConnection, sqlalchemy.ext.asyncio.AsyncSession
# or sqlalchemy.ext.asyncio.AsyncConnection.
AsyncExecutor = Any

_NEEDS_PSYCOPG = (
    "courier needs the psycopg (3) driver underneath: SQLAlchemy URLs 'postgresql+psycopg://', "
    "Django's postgresql backend with psycopg 3 installed"
)


def _sqlalchemy_connection(obj: Any) -> Any | None:
    """The SQLAlchemy Connection behind a Session/scoped_session/Connection, in a transaction."""
    try:
        from sqlalchemy.engine import Connection
        from sqlalchemy.orm import Session, scoped_session
    except ImportError:  # pragma: no cover - SQLAlchemy is optional
        return None
    if isinstance(obj, scoped_session):
        obj = obj()
    if isinstance(obj, Session):
        # As Session.execute would: pending ORM changes reach the database before courier's
        # statement, so a payload can refer to a row added in this session.
        if obj.autoflush:
            obj.flush()
        return obj.connection()
    if isinstance(obj, Connection):
        if not obj.in_transaction():
            # Without this the statement would open a transaction SQLAlchemy does not know about,
            # and conn.commit() would not commit it.
            obj.begin()
        return obj
    return None


def resolve(executor: Executor) -> psycopg.Connection[Any]:
    """The psycopg connection to run on."""
    if isinstance(executor, psycopg.Connection):
        return executor
    module = type(executor).__module__
    if module.startswith("sqlalchemy"):
        sa_conn = _sqlalchemy_connection(executor)
        if sa_conn is not None:
            raw = sa_conn.connection.driver_connection
            if isinstance(raw, psycopg.Connection):
                return raw
            raise TypeError(_NEEDS_PSYCOPG)
    if module.startswith("django") and isinstance(executor, _DjangoConnection):
        if executor.vendor != "postgresql":
            raise TypeError(f"courier needs PostgreSQL, not Django's {executor.vendor!r} backend")
        executor.ensure_connection()
        raw = getattr(executor, "connection", None)
        if isinstance(raw, psycopg.Connection):
            return raw
        raise TypeError(_NEEDS_PSYCOPG)
    if isinstance(executor, psycopg.AsyncConnection):
        raise TypeError("an AsyncConnection goes to courier.aio's functions")
    raise TypeError(
        f"courier cannot run on a {type(executor).__qualname__}: pass a psycopg Connection, a "
        "SQLAlchemy Session or Connection, or django.db.connection"
    )


async def resolve_async(executor: AsyncExecutor) -> psycopg.AsyncConnection[Any]:
    if isinstance(executor, psycopg.AsyncConnection):
        return executor
    if type(executor).__module__.startswith("sqlalchemy"):
        try:
            from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
        except ImportError:  # pragma: no cover
            AsyncConnection = AsyncSession = None  # type: ignore[assignment,misc]
        conn: Any = None
        if AsyncSession is not None and isinstance(executor, AsyncSession):
            if executor.autoflush:
                await executor.flush()
            conn = await executor.connection()
        elif AsyncConnection is not None and isinstance(executor, AsyncConnection):
            if not executor.in_transaction():
                await executor.begin()
            conn = executor
        if conn is not None:
            raw = (await conn.get_raw_connection()).driver_connection
            if isinstance(raw, psycopg.AsyncConnection):
                return raw
            raise TypeError(_NEEDS_PSYCOPG)
    if isinstance(executor, psycopg.Connection):
        raise TypeError("a (sync) psycopg Connection goes to courier's top-level functions")
    raise TypeError(
        f"courier.aio cannot run on a {type(executor).__qualname__}: pass a psycopg "
        "AsyncConnection, or a SQLAlchemy AsyncSession or AsyncConnection"
    )


def _configure(cursor: psycopg.Cursor[Row] | psycopg.AsyncCursor[Row]) -> None:
    # Loaders on the cursor only: the connection's own configuration is the application's.
    adapters = cursor.adapters
    adapters.register_loader("jsonb", JsonbLoader)
    adapters.register_loader("json", JsonLoader)
    adapters.register_loader("uuid", UUIDLoader)


def execute(executor: Executor, stmt: Stmt[T]) -> T:
    conn = resolve(executor)
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            _configure(cur)
            cur.execute(stmt.sql, stmt.params)
            rows = cur.fetchall() if cur.description else []
    except psycopg.Error as err:
        mapped = translate(err)
        if mapped is None:
            raise
        raise mapped from err
    return stmt.shape(rows)


async def execute_async(executor: AsyncExecutor, stmt: Stmt[T]) -> T:
    conn = await resolve_async(executor)
    try:
        async with conn.cursor(row_factory=dict_row) as cur:
            _configure(cur)
            await cur.execute(stmt.sql, stmt.params)
            rows = await cur.fetchall() if cur.description else []
    except psycopg.Error as err:
        mapped = translate(err)
        if mapped is None:
            raise
        raise mapped from err
    return stmt.shape(rows)
