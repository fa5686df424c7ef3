"""Drives the apiserver with the official Kubernetes Python client (python3-kubernetes).

Usage: client_check.py SERVER_URL. Exits non-zero with a message on the first mismatch.
"""
import sys
import threading

from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def main(url):
    cfg = client.Configuration()
    cfg.host = url
    api_client = client.ApiClient(cfg)
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)

    names = [n.metadata.name for n in core.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
    cm = core.create_namespaced_config_map(
        "py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="conf", labels={"app": "py"}), data={"k": "v"}))
    assert cm.metadata.uid and cm.metadata.resource_version, cm.metadata

    # Watch from the list's resourceVersion while another thread writes.
    listed = core.list_namespaced_config_map("py")
    assert [c.metadata.name for c in listed.items] == ["conf"]
    events = []
    w = watch.Watch()

    def writer():
        core.create_namespaced_config_map("py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="second")))
        core.patch_namespaced_config_map("conf", "py", {"data": {"k": "v2"}})
        core.delete_namespaced_config_map("second", "py")

    threading.Timer(0.5, writer).start()
    for ev in w.stream(core.list_namespaced_config_map, "py",
                       resource_version=listed.metadata.resource_version, timeout_seconds=20):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 3:
            w.stop()
    assert events == [("ADDED", "second"), ("MODIFIED", "conf"), ("DELETED", "second")], events

    # Optimistic concurrency: a replace with a stale resourceVersion is a 409 Conflict.
    stale = core.read_namespaced_config_map("conf", "py")
    fresh = core.read_namespaced_config_map("conf", "py")
    fresh.data["k"] = "v3"
    core.replace_namespaced_config_map("conf", "py", fresh)
    stale.data["k"] = "lost"
    try:
        core.replace_namespaced_config_map("conf", "py", stale)
        raise AssertionError("stale replace succeeded")
    except ApiException as e:
        assert e.status == 409, e
        assert "Conflict" in e.body, e.body
    assert core.read_namespaced_config_map("conf", "py").data["k"] == "v3"

    # Typed objects in a named group, the scale subresource, and NotFound.
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")]))))
    apps.create_namespaced_deployment("py", dep)
    apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("web", "py").spec.replicas == 4
    assert apps.read_namespaced_deployment_scale("web", "py").spec.replicas == 4
    try:
        core.read_namespaced_pod("nope", "py")
        raise AssertionError("read of a missing pod succeeded")
    except ApiException as e:
        assert e.status == 404, e
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
