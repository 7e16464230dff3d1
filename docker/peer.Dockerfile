# The Weft peer: one statically linked `weft` binary and nothing else. Built by
# docker/build-images.sh with the classic builder; no base image is pulled.
FROM scratch
COPY weft /weft
# The ledger and configuration live in a volume at /var/lib/weft (a new volume starts as a copy
# of these directories, owned by the peer's user); the binary needs no other file.
COPY --chown=65534:65534 volume/ /var/lib/weft/
VOLUME ["/var/lib/weft"]
USER 65534:65534
EXPOSE 7051 9443
ENTRYPOINT ["/weft"]
CMD ["node", "start", "--config", "/etc/weft/node.toml"]
