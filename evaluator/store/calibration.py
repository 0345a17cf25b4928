"""The calibration's part of the store: the judge's pairs and the fitted maps."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, delete, desc, func, insert, select

from evaluator.calibration.maps import FittedMap, Pair
from evaluator.store.database import Database
from evaluator.store.models import calibration_maps, calibration_pairs

KEEP_PER_KEY = 10
"""The fits kept per (scorer version, route, metric); older ones are deleted by the next save
(an old score's ``explain`` then says its map is no longer kept)."""


class CalibrationStore:
    """Pairs (written by :class:`~evaluator.store.results.ResultWriter` with the judge's
    scores), and maps (written by a refit or ``groundwatch calibrate``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __repr__(self) -> str:
        return repr(self._db)

    def now(self) -> datetime:
        """The store's clock (what stamps the pairs)."""
        return self._db.clock()

    def pairs(self, scorer: str, scorer_version: str, since: datetime,
              limit: int | None = None) -> list[Pair]:
        """The pairs of the cheap scorer's version newer than ``since``, oldest first (at
        most the newest ``limit``)."""
        c = calibration_pairs.c
        query = (select(c.request_id, c.route, c.metric, c.cheap, c.target, c.created_at)
                 .where(c.scorer == scorer, c.scorer_version == scorer_version,
                        c.created_at >= since)
                 .order_by(desc(c.created_at), desc(c.request_id)))
        if limit is not None:
            query = query.limit(limit)
        with self._db.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Pair(r.request_id, r.route, r.metric, float(r.cheap), float(r.target))
                for r in reversed(rows)]

    def save_maps(self, maps: Sequence[FittedMap]) -> list[FittedMap]:
        """Store ``maps``; return them with their ids. Keeps the newest
        :data:`KEEP_PER_KEY` fits of each key, in the same transaction."""
        out = []
        c = calibration_maps.c
        with self._db.writer.begin() as conn:
            for m in maps:
                new_id = conn.execute(insert(calibration_maps).values(
                    scorer=m.scorer, scorer_version=m.scorer_version, source=m.source,
                    route=m.route, metric=m.metric, fitted_at=m.fitted_at, n=m.n,
                    usable=m.usable, body=m.body()).returning(c.id)).scalar_one()
                out.append(dataclasses.replace(m, id=new_id))
                ids = conn.scalars(
                    select(c.id).where(c.scorer == m.scorer,
                                       c.scorer_version == m.scorer_version,
                                       c.route == m.route, c.metric == m.metric)
                    .order_by(desc(c.id))).all()
                if len(ids) > KEEP_PER_KEY:
                    conn.execute(delete(calibration_maps).where(
                        c.id.in_(ids[KEEP_PER_KEY:])))
        return out

    def newest_maps(self, scorer: str, scorer_version: str, *, usable_only: bool
                    ) -> list[FittedMap]:
        """Per (route, metric) of the cheap scorer's version, the newest fit (the newest
        usable one with ``usable_only``: the maps that apply)."""
        c = calibration_maps.c
        where = [c.scorer == scorer, c.scorer_version == scorer_version]
        if usable_only:
            where.append(c.usable.is_(True))
        newest = (select(c.route, c.metric, func.max(c.id).label("id"))
                  .where(*where).group_by(c.route, c.metric).subquery())
        query = (select(calibration_maps)
                 .join(newest, and_(c.id == newest.c.id))
                 .order_by(c.route, c.metric))
        with self._db.engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(query).all()]

    def map_by_id(self, map_id: int) -> FittedMap | None:
        with self._db.engine.connect() as conn:
            row = conn.execute(select(calibration_maps)
                               .where(calibration_maps.c.id == map_id)).first()
        return _from_row(row) if row is not None else None


def _from_row(r: object) -> FittedMap:
    return FittedMap.from_row(id=r.id, scorer=r.scorer,  # type: ignore[attr-defined]
                              scorer_version=r.scorer_version,  # type: ignore[attr-defined]
                              source=r.source, route=r.route,  # type: ignore[attr-defined]
                              metric=r.metric, fitted_at=r.fitted_at,  # type: ignore[attr-defined]
                              n=r.n, usable=r.usable, body=r.body)  # type: ignore[attr-defined]
