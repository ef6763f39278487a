# Prometheus for the compose cluster where prom/prometheus cannot be pulled: a Prometheus
# binary from the build host (Debian's package) on the same base as the node image, laid
# out as prom/prometheus is (entrypoint the binary, data in /prometheus, user nobody), so
# the compose service runs either image unchanged. Built by
# deploy/build-image.sh --prometheus BIN.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
COPY prometheus /bin/prometheus
RUN prometheus --version && install -d -o 65534 -g 65534 /prometheus /etc/prometheus
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
