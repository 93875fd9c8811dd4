// Stripe Elements: the card goes from this page straight to Stripe; the server only sees the SetupIntent id.
(function () {
  "use strict";
  var form = document.getElementById("stripe-form");
  if (!form || typeof Stripe === "undefined") { return; }
  var stripe = Stripe(form.dataset.key);
  var elements = stripe.elements({ clientSecret: form.dataset.secret });
  var card = elements.create("payment");
  card.mount("#card-element");
  var errors = document.getElementById("card-errors");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    stripe.confirmSetup({ elements: elements, redirect: "if_required",
                          confirmParams: { return_url: form.dataset.return } })
      .then(function (result) {
        if (result.error) {
          errors.textContent = result.error.message;
          button.disabled = false;
          return;
        }
        document.getElementById("setup-intent").value = result.setupIntent.id;
        form.submit();
      });
  });
})();
