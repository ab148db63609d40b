"""TF Serving: the retriever SavedModel (retriever.py), the model server's folder
layout (layout.py) and a fit run's export (export.py)."""
