"""The HTTP connections to the apiserver that the edge's two Kubernetes adapters
(`edge_connector.kube_executor`, `cluster_controller.kube`) open, and how they are closed."""
