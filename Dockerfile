# docxy in a container: a static binary on an empty base, with CA roots for upstream TLS.
#   docker build -t docxy .
#   docker run -p 5000:5000 -v docxy-cache:/var/cache/docxy docxy
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/docxy . && \
    mkdir -p /out/var/cache/docxy /out/etc/docxy && chown 65534:65534 /out/var/cache/docxy && \
    sed -e 's|^dir = "docxy-cache"|dir = "/var/cache/docxy"|' config.toml.example > /out/etc/docxy/config.toml

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /
USER 65534:65534
EXPOSE 5000
VOLUME /var/cache/docxy
ENTRYPOINT ["/docxy"]
CMD ["-config", "/etc/docxy/config.toml"]
