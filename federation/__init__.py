"""The federation's shared language: signed, expiring, single-use messages between the hub and the
nodes, payloads sealed for their one reader, and the catalogue's HealthDCAT-AP form.

No store, no framework, no decision: the hub (``hub``) and the nodes (``node``) decide; this
package only says who sent what, for which permit, and whether it may still be believed.
"""
