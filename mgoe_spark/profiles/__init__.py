"""Built-in config profiles (``default.yaml``, ``test.yaml``), loaded by :func:`mgoe_spark.config.load_config`.

A package (not a bare data folder) so setuptools installs it without a packaging warning.
"""
