"""Ingest: read raw inputs into document shards, quarantining bad records.

One module per job, so a caller imports only what it needs (``filters.quality_features`` takes
:func:`pipeline.ingest.html.extract_text` without the readers or the stage):

* :mod:`~pipeline.ingest.records` -- what a reader yields (``Record``) and ``InputError``;
* :mod:`~pipeline.ingest.streams` -- compressed streams opened bounded, cut-off files detected, lines capped;
* :mod:`~pipeline.ingest.html` -- HTML to text with per-page work bounded (nesting, attributes, options);
* :mod:`~pipeline.ingest.paths` -- globs and folder walks: regular files, each folder once, never the run folder;
* :mod:`~pipeline.ingest.readers` -- one module per format, found through the ``winnow.readers`` entry points:
  JSON Lines, Parquet, .txt, WARC/WET/ARC, Hugging Face datasets by name, ``save_to_disk`` folders;
* :mod:`~pipeline.ingest.stage` -- the ``ingest`` stage: inputs to tasks, records to rows.

Every input record becomes exactly one row, kept or removed: ``malformed`` (not a JSON object,
unparseable JSON, a number or nesting beyond the parser's limits), ``bad_encoding`` (not UTF-8, or lone
surrogates in the text, id, URL or a field name), ``missing_text``, ``empty``, ``too_long``,
``html_too_deep``, ``html_too_complex``, ``unsupported_content_type``, ``undecodable_content``,
``http_status`` and ``not_web_content``; each row records its ``input_file`` and ``input_record``. A file
that is cut short, corrupt, empty where a format cannot be, or not in the format it claims stops the run
with one line naming it. A file that loses more than ``max_removed_share`` of its records to one reason
stops the run too, naming the reason and the fields its records have.
"""
