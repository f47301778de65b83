"""The operator's one way to talk to the API server.

- config:   where the API server is and how to authenticate (kubeconfig or ServiceAccount).
- session:  the one aiohttp session every call of the operator's own code goes through.
- informer: list-and-watch of one built-in kind into a cache (client-go's informer); the
            controllers' child kinds and nodes come from these, one per kind.
- client:   the controllers' reads and writes for any kind, plain JSON both ways.
- objects:  ownership, resourceVersion order, what a LIST shows was deleted.
- lease:    leader election with a coordination.k8s.io/v1 Lease.

Kopf keeps its own watches (and HTTP session) for the three custom kinds: its handlers, settings
and liveness are what operators built on it expect; see aiops.controllers.registration.
"""
