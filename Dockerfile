# The recording proxy in a container: the data directory (journal, tables, the proxy's CA) is a volume.
#   docker build -t receipts .
#   docker run --rm -p 127.0.0.1:8080:8080 -v "$PWD/data:/data" receipts
# Apps on the host then use HTTPS_PROXY=http://127.0.0.1:8080 and trust data/ca/mitmproxy-ca-cert.pem
# (`receipts env --data data` prints the lines). Inside the container the proxy listens on all of the
# container's addresses, so that the published port reaches it; publish it on 127.0.0.1 as above.
FROM python:3.12-slim
COPY . /src
RUN pip install --no-cache-dir /src && rm -rf /src
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["receipts"]
CMD ["proxy", "--listen-host", "0.0.0.0", "--listen-port", "8080", "--data", "/data"]
