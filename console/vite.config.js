// Builds the console into ../static, which the binary serves at `/`.
// No inline scripts or styles (the server's CSP forbids them) and no
// module-preload polyfill (it would be an inline-able helper we do not need:
// the console targets current browsers).
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: '../static',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: 'es2022',
    reportCompressedSize: false,
    // Swagger UI (the API page only, loaded when it opens) is one 1.6 MB
    // chunk; everything else stays far below this.
    chunkSizeWarningLimit: 1700,
  },
  server: {
    proxy: {
      '/v1': { target: 'http://127.0.0.1:8080', ws: true },
      '/console': 'http://127.0.0.1:8080',
      '/metrics': 'http://127.0.0.1:8080',
      '/healthz': 'http://127.0.0.1:8080',
      '/readyz': 'http://127.0.0.1:8080',
    },
  },
});
