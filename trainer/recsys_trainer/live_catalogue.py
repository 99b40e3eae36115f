"""The data store's catalogue records (UpsertItems through the server) carried into the next
model version: `recsys-train refresh --store` merges them over the catalogue file, so the new
version's ``catalog.tsv`` holds the items added or renamed through the API."""

from __future__ import annotations

from collections.abc import Sequence

from recsys_core.catalog import Catalog
from recsys_core.datastore import ItemRecord


def merge(catalog: Catalog | None, records: Sequence[ItemRecord]) -> Catalog | None:
    """``catalog`` with each upserted record's title, categories and attributes (replacing
    the file's entry for that id, or added after the file's items in id order). Records that only
    set availability change nothing here: availability is the server's, read from the store."""
    upserted = sorted((r for r in records if r.title is not None), key=lambda r: r.item_id)
    if not upserted:
        return catalog
    ids = catalog.item_ids.tolist() if catalog is not None else []
    titles = catalog.titles.tolist() if catalog is not None else []
    cats = list(catalog.categories) if catalog is not None else []
    attrs = list(catalog.attributes or ({},) * len(ids)) if catalog is not None else []
    pos = {item: i for i, item in enumerate(ids)}
    for r in upserted:
        i = pos.get(r.item_id)
        if i is None:
            pos[r.item_id] = len(ids)
            ids.append(r.item_id)
            titles.append(r.title or "")
            cats.append(tuple(r.categories))
            attrs.append(dict(r.attributes))
        else:
            titles[i], cats[i], attrs[i] = r.title or "", tuple(r.categories), dict(r.attributes)
    names = catalog.category_names if catalog is not None else None
    return Catalog(ids, titles, tuple(cats), names, tuple(attrs) if any(attrs) else None)
