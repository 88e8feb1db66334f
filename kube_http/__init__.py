"""The edge's HTTP client to the apiserver: the kubeconfig (or in-cluster ServiceAccount) read
(`kubeconfig`), TLS and rotating credentials (`client`), and connections closed however the
request that opened them ends (`connections`). The edge's two Kubernetes adapters
(`edge_connector.kube_executor`, `cluster_controller.kube`) build on it."""
