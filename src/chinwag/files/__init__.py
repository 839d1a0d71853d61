"""File sharing: offers, downloads, and serving chunks to peers (docs/files.md).

An offer is a chat message (protocol/transfer.py), so it is signed, stored and
delivered like any message, also to peers who were away. This module keeps a
row per offer or transfer in the store and runs them:

- a download asks connected peers who holds the file whole (`fwho`/`fhave`),
  fetches the chunk digests, then chunks from up to FILE_MAX_SOURCES sources
  at once, each within a window (so memory stays bounded), writing verified
  data into a hidden partial file next to its final place; the partial file
  is renamed only once the whole-file SHA-256 matches, to a name that never
  overwrites anything;
- after a restart or a lost connection the download goes on from the chunks
  in the partial file that still match their digests, without asking again;
- serving reads chunks in a worker thread (a file whose size or modification
  time changed since it was offered is no longer served), and writes file data
  only while the connection's send buffer is below its high-water mark, so chat
  frames never queue behind more than that.

The package is split by concern: offers.py (the book of offers and their
states), downloading.py (fetching), serving.py (sending chunks), share.py (the
FileShare facade the node uses). The rules and timers of a download are
protocol/transfer.py's sans-IO Download; disk work (hashing, checking and
writing chunks, naming) is in store/filedata.py.
"""

from chinwag.files.share import FileShare

__all__ = ["FileShare"]
