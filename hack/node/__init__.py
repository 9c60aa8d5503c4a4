"""Node mode: containerd, kubelet, kube-proxy and the images, for tests that need real Pods."""
