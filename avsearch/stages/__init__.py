"""The stages every media pass is built from (clip-retrieval's reader → mapper → writer):

- ``reader``: plan (mark and sweep) and the reader: decode threads streaming each file's
  pieces into a bounded queue, or a file's windows from the feature cache; a range of one file
  after a seek (query);
- ``mapper``: tower features in batches, then the heads; the feature-cache lookup;
- ``writers``: the manifest (index), the feature cache, training's views;
- ``runner``: wires them, commits every few seconds, commits what is done when interrupted.

``embed`` (``avsearch.pipeline``), ``query`` and training's media mode
(``avsearch.train.pairs``) are made of these; nothing else in avsearch decodes or encodes media.
"""
