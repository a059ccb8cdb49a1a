"""The kernel's security ring: who a caller is and what its credential lets it do (credentials:
the admin token, API keys and their scopes, client certificates, owner identities, namespaces),
the listener rule (exposure: loopback, or TLS and required credentials), TLS material (tls),
how the kernel and its CLI dial (dial), remote providers over mutual TLS (remote), the
bounds a contract declares on a request (validation), checked before any plugin runs, which
of the kernel's privileged objects a plugin holds, as its manifest asks (capabilities), the data
labels a call carries and gathers from what it gets back (labels), personal data taken out of a
request for a remote provider and put back in its answer (redaction, outbound), and a plugin
installed into the running kernel only as the file expected (live_install).

It imports nothing of the kernel but the call and provider types it guards (`cortex.kernel.call`,
`.method`, `.registry`); the core imports it. Plugins reach what they need of it through
`cortex.kernel` (Identity, AuthError, LOCAL) and `cortex.kernel.sdk`.
"""
