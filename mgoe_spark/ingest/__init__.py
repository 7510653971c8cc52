"""Stage 0, ingest (SPEC 7, 8), in the order a run uses its modules:

- :mod:`.parse`: raw records of each input format -> parsed events or a reject reason; pure;
- :mod:`.run`: :func:`~.run.run_ingest` reads the input, parses, de-duplicates, extends the vocabularies
  and writes interactions, vocab_users, vocab_items and rejects for the run date.
"""
