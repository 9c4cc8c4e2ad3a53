"""Coordination beyond a pair (issue 13): where each floating IP should live over N load
balancers (:mod:`.placement`, pure) and who is *granted* it (:mod:`.etcd_store`, etcd leases and
transactions)."""
