"""Bringing circuits from other libraries into pcc (``pcc.interop.pyjuice``: PyJuice node DAGs → ``.pc``)."""
