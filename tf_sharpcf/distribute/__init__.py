"""tf.distribute: strategies (strategy.py), per-replica input (inputs.py), the in-graph
replica maths the loss code uses (replica.py, a leaf), and the parameter-server
cluster (cluster.py: processes; parameter_server.py: the chief's side)."""
