"""Box catalogs: versions, stores (directory, S3), the publish transaction, and reading a catalog."""
