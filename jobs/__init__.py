"""jobs: the edges. spark-submit entry points, table I/O and the ``mgoe`` command."""
