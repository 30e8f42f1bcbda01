"""Inverted lists in one memory-mapped file, for any FAISS IVF index, fast-scan PQ included.

WHY our own writer. FAISS's ``OnDiskInvertedLists`` maps a file of lists, and its scanners read lists only through
the generic ``InvertedLists`` interface, so a fast-scan index searches it as it searches lists in RAM. But FAISS
builds fast-scan lists only in RAM (``BlockInvertedLists``: codes packed in SIMD blocks of 32 vectors), its merge
into a file (``merge_ondisk``) copies ``size * code_size`` bytes per list (cutting a packed block short), merging
block lists in RAM corrupts the heap once a list's length is a multiple of the block's byte size (measured: a 10M
build aborted, "corrupted size vs. prev_size"; ``BlockInvertedLists::add_entries`` then copies whole blocks to
``o * code_size`` with an invalid ``code_size``), and its reader refuses a fast-scan index with other lists. So:

- ``write_lists`` takes the block indexes a build added, unpacks each block's lists to flat codes (FAISS's own
  ``reconstruct_orig_invlists``), and writes every list once, in order: its codes re-packed whole blocks at a time
  with the index's own ``CodePacker`` (``capacity`` = size rounded up to the block), then its ids; the layout
  ``OnDiskInvertedLists`` expects. The list table is saved with FAISS's own list writer;
- the index file keeps the trained index with empty lists; ``attach_lists`` reads the table (its data file is found
  beside it) and puts the mapped lists in.

A search over the attached lists returns exactly what the same index built in RAM returns
(``tests/test_index_ondisk.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipvip.index.budget import ID_BYTES


def faiss_ivf(index: Any) -> Any:
    """The IVF index inside ``index`` (under an OPQ transform, if any), as its own class. A view: ``index`` owns
    it, so keep ``index`` alive while it is used."""
    import faiss

    return faiss.downcast_index(faiss.extract_index_ivf(index))


def _flat_lists(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes [n, code_size], ids [n], offsets [nlist + 1]) of the block index at ``path``, grouped by list."""
    import faiss

    index = faiss.read_index(path)
    ivf = faiss_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if isinstance(lists, faiss.BlockInvertedLists):
        flat = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
        ivf.orig_invlists = flat
        ivf.reconstruct_orig_invlists()
        ivf.orig_invlists = None
        lists = flat
    cs = int(ivf.code_size)
    sizes = np.array([lists.list_size(j) for j in range(ivf.nlist)], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    codes, ids = np.empty((offsets[-1], cs), np.uint8), np.empty(offsets[-1], np.int64)
    for j in np.flatnonzero(sizes).tolist():
        a, b = int(offsets[j]), int(offsets[j + 1])
        codes[a:b] = faiss.rev_swig_ptr(lists.get_codes(j), (b - a) * cs).reshape(b - a, cs)
        ids[a:b] = faiss.rev_swig_ptr(lists.get_ids(j), b - a)
    del index
    return codes, ids, offsets


def write_lists(index: Any, blocks: list[str], data: Path, table: Path) -> int:
    """Write the lists of the block indexes ``blocks`` (files, trained like ``index``) to ``data`` + ``table``,
    each atomically; returns the data file's size in bytes. Every block's codes are held at once (the whole index:
    within the budget by construction); the data file is written once, sequentially."""
    import faiss

    from clipvip.io import atomic_path

    ivf = faiss_ivf(index)
    code_size, nlist = int(ivf.code_size), int(ivf.nlist)
    packed = isinstance(faiss.downcast_InvertedLists(ivf.invlists), faiss.BlockInvertedLists)
    packer = ivf.get_CodePacker() if packed else None
    per_block = int(packer.nvec) if packer else 1
    pieces = [_flat_lists(b) for b in blocks]
    sizes, caps, offsets = [], [], []
    offset = 0
    with atomic_path(data) as tmp, open(tmp, "wb") as f:
        for j in range(nlist):
            codes = np.concatenate([c[o[j] : o[j + 1]] for c, _, o in pieces])
            ids = np.concatenate([i[o[j] : o[j + 1]] for _, i, o in pieces])
            size = len(ids)
            cap = -(-size // per_block) * per_block
            if packer is not None and size:
                flat = np.zeros((cap, code_size), np.uint8)
                flat[:size] = codes
                out = np.empty(cap // per_block * int(packer.block_size), np.uint8)
                for k in range(cap // per_block):
                    packer.pack_all(
                        faiss.swig_ptr(flat[k * per_block :]), faiss.swig_ptr(out[k * int(packer.block_size) :])
                    )
                codes = out
            f.write(codes.tobytes())
            f.write(np.concatenate([ids, np.full(cap - size, -1, np.int64)]).tobytes())
            sizes.append(size)
            caps.append(cap)
            offsets.append(offset)
            offset += cap * (code_size + ID_BYTES)
    ondisk = faiss.OnDiskInvertedLists(nlist, code_size, str(data))
    ondisk.lists.clear()
    for size, cap, off in zip(sizes, caps, offsets, strict=True):
        one = faiss.OnDiskOneList()
        one.size, one.capacity, one.offset = size, cap, off
        ondisk.lists.push_back(one)
    ondisk.totsize = offset
    with atomic_path(table) as tmp:
        writer = faiss.FileIOWriter(str(tmp))
        faiss.write_InvertedLists(ondisk, writer)
        del writer  # closes the file
    return offset


def attach_lists(index: Any, table: Path, count: int) -> Any:
    """Put the memory-mapped lists saved by ``write_lists`` into ``index`` (read with empty lists); the data file is
    found beside ``table`` wherever the folder has moved. Pages are read by the OS on first touch; FAISS's
    prefetch threads (one set per search) are turned off: a search touches each list once."""
    import faiss

    if not table.is_file():
        raise FileNotFoundError(f"{table}: the index's list table is missing")
    lists = faiss.read_InvertedLists(faiss.FileIOReader(str(table)), faiss.IO_FLAG_ONDISK_SAME_DIR)
    ondisk = faiss.downcast_InvertedLists(lists)
    ondisk.prefetch_nthread = 0
    ivf = faiss_ivf(index)
    ivf.replace_invlists(ondisk, True)
    lists.this.disown()  # the index owns the lists now
    ivf.ntotal = index.ntotal = count
    return index
