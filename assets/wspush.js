"use strict"; // replaced by the browser library
