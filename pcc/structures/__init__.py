"""Structure generators: circuits of well-known shapes, written as readable ``.pc`` text.

* :mod:`.chow_liu` — pairwise mutual information of data columns and Chow–Liu trees (networkx).
* :mod:`.hclt` — Hidden Chow–Liu Trees: :func:`hclt` (from data) and :func:`hclt_source` (from a tree).
"""
from .chow_liu import chow_liu_tree, infer_num_cats, maximum_spanning_tree, mutual_information
from .hclt import hclt, hclt_source, tree_center

__all__ = ["chow_liu_tree", "infer_num_cats", "maximum_spanning_tree", "mutual_information", "hclt",
           "hclt_source", "tree_center"]

# Region-graph and sequence structures: Poon-Domingos (.pd), RAT-SPN (.ratspn), HMM (.hmm).
from .hmm import hmm_source  # noqa: E402
from .pd import pd_counts, pd_source  # noqa: E402
from .ratspn import ratspn_counts, ratspn_partitions, ratspn_source  # noqa: E402

__all__ += ["pd_source", "pd_counts", "ratspn_source", "ratspn_counts", "ratspn_partitions", "hmm_source"]
