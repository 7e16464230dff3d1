# A chaincode image: the package's statically linked binary, run as a non-root user. Built by
# docker/build-images.sh (and, from a package, by the peer's Docker runtime) with no base image.
FROM scratch
COPY chaincode /chaincode
USER 65534:65534
ENTRYPOINT ["/chaincode"]
