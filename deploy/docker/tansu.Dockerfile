# A Kafka-protocol broker for the compose cluster where no Kafka image can be pulled: the
# static Tansu binary (https://github.com/tansu-io/tansu, the broker of quiver's process
# tests) on the same base as the node image. In-memory storage: for a development cluster,
# not for data that must survive the broker. Built by deploy/build-image.sh --tansu BIN.
ARG BASE=docker.io/library/debian:bookworm-slim
FROM ${BASE}
COPY tansu /usr/local/bin/tansu
RUN tansu --version
USER 65534:65534
EXPOSE 9092
ENTRYPOINT ["tansu"]
