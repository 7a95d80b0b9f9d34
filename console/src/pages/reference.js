// API reference: the server's own contract (GET /v1/openapi.json, generated
// from the handlers) rendered by Swagger UI, bundled from npm at build time
// (swagger-ui-dist; no CDN) and loaded only when this page opens. Swagger UI
// renders with React, which sets styles through the CSSOM (allowed by
// `style-src 'self'`) and ships its stylesheet as a file, so it runs under the
// console's CSP unchanged: no inline <style>, no eval. Redoc was not chosen:
// its styled-components inject <style> elements, which that CSP blocks.
//
// "Try it out" is offered for GET only: reads go out with the console
// session's cookie; state changes stay on the console's own pages (they need
// the CSRF token and a confirmation).

import { el } from '../ui.js';

export function referencePage() {
  const status = el('p', { class: 'msg', role: 'status', 'aria-live': 'polite', id: 'reference-status', text: 'Loading the API reference…' });
  const box = el('div', { id: 'reference', class: 'reference' });
  const root = el(
    'section',
    { 'aria-labelledby': 'reference-title' },
    el('h1', { id: 'reference-title', text: 'API reference' }),
    el('p', {}, 'The machine-readable contract is ', el('a', { href: '/v1/openapi.json', text: '/v1/openapi.json' }), ' (OpenAPI 3.1; the live stream’s protocol is its x-websocket extension).'),
    status,
    box,
  );
  let alive = true;
  Promise.all([import('swagger-ui-dist/swagger-ui-es-bundle.js'), import('swagger-ui-dist/swagger-ui.css')])
    .then(([mod]) => {
      if (!alive) return;
      const SwaggerUI = mod.default || mod;
      SwaggerUI({
        domNode: box,
        url: '/v1/openapi.json',
        // The console routes by the URL fragment; Swagger UI must not use it too.
        deepLinking: false,
        // No badge fetched from a validator service elsewhere.
        validatorUrl: null,
        supportedSubmitMethods: ['get'],
        defaultModelsExpandDepth: 0,
        onComplete: () => {
          if (alive) status.textContent = '';
        },
      });
    })
    .catch((e) => {
      status.textContent = `The API reference could not be loaded: ${e.message}`;
      status.classList.add('error');
    });
  return {
    root,
    destroy() {
      alive = false;
    },
  };
}
