// WebSocket echo with Node's `ws` package, as its README's echo server writes it: each message
// back with its type. Compression off (ws's default for servers). Prints its port, then serves.
// Usage: node server.js [PORT]
const { WebSocketServer } = require("ws");
const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.argv[2] || 0), maxPayload: 16 << 20 });
wss.on("listening", () => console.log(wss.address().port));
wss.on("connection", (ws, req) => {
  req.socket.setNoDelay(true);
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
});
