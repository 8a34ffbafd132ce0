"""The offline desk tool: a desk's files (orders, fills, trades, quotes, closes; CSV or Parquet)
in, every order analysed at once with `tca`'s vectorised engine, CSV + JSON + HTML report out
(docs/tca.md, *Offline*). It does the file I/O that `tca` (pure) never does."""

from tca_offline.files import OfflineInputError
from tca_offline.offline import analyse_table, run_offline

__all__ = ["OfflineInputError", "analyse_table", "run_offline"]
