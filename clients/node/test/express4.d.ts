// Express 4 (installed as `express4`) for the tests; its API is typed with Express 5's types.
declare module 'express4' {
  import express = require('express');
  export = express;
}
